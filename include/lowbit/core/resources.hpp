// Resource accounting for long runs: the process's peak resident memory, reported beside timings.
#pragma once

#include <sys/resource.h>

namespace lowbit {

// Peak resident set size of this process so far, in MiB.
inline double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace lowbit
