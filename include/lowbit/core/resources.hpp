// Resource accounting for long runs: the process's peak resident memory and CPU time, reported beside
// timings.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <ctime>

namespace lowbit {

// Peak resident set size of this process so far, in MiB.
inline double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Seconds of CPU time this process has used so far, over all its threads.
inline double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Physical memory of this machine in MiB (0 when the system does not say).
inline double physical_memory_mib() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) / (1024.0 * 1024.0) : 0.0;
}

}  // namespace lowbit
