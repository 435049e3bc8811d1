// An HTTP GET for tests, through libcurl (no hand-written client): the metrics endpoint's
// scrapes.
#pragma once

#include <string>
#include <utility>

namespace farmem::test {

/// GETs `url` (5 s timeout, no proxy); the status code (0 when no reply) and the body, or
/// curl's error text when there was no reply.
std::pair<long, std::string> http_get(const std::string& url);

/// The value of sample `name` in a Prometheus text body; -1 when it is not there.
double prometheus_value(const std::string& body, const std::string& name);

}  // namespace farmem::test
