// Runs of consecutive page (or frame) numbers: one ioctl, madvise or far op covers a run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace farmem::paging {

/// Calls fn(first_index, count) for each run of consecutive page numbers in sorted `pages`.
template <typename Fn>
void for_each_run(std::span<const std::uint32_t> pages, Fn&& fn) {
  for (std::size_t i = 0; i < pages.size();) {
    std::size_t j = i + 1;
    while (j < pages.size() && pages[j] == pages[j - 1] + 1) ++j;
    fn(i, j - i);
    i = j;
  }
}

}  // namespace farmem::paging
