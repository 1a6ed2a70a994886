// Progress reporting for long work (calibration, training, evaluation). On a terminal it redraws one
// line with a bar, rate and ETA; when stderr is not a terminal (CI, logs, pipes) it prints a plain log
// line at most every `log_interval` seconds, so logs stay readable and bounded.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "tensor.hpp"

namespace lowbit {

inline std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

class Progress {
 public:
  // `total` units of work named `unit` (e.g. "tok", "step"); `quiet` silences all output.
  Progress(std::string label, index_t total, std::string unit = "it", bool quiet = false,
           double log_interval = 10.0)
      : label_(std::move(label)),
        unit_(std::move(unit)),
        total_(total),
        quiet_(quiet),
        tty_(isatty(STDERR_FILENO) != 0),
        log_interval_(log_interval),
        start_(Clock::now()),
        last_print_(start_) {}

  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Advances by `n` units; `status` is a short extra text such as "loss 2.31".
  void update(index_t n = 1, const std::string& status = {}) {
    done_ += n;
    status_ = status;
    const auto now = Clock::now();
    const double since = seconds(last_print_, now);
    if (quiet_) return;
    if ((tty_ && since >= 0.1) || (!tty_ && since >= log_interval_) || done_ >= total_) {
      last_print_ = now;
      print(false);
    }
  }

  void set_status(const std::string& status) { status_ = status; }
  index_t done() const { return done_; }
  double elapsed() const { return seconds(start_, Clock::now()); }
  double rate() const {
    const double e = elapsed();
    return e > 0 ? static_cast<double>(done_) / e : 0.0;
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    // A log (non-tty) already holds the line for the last update if it reached the total.
    if (!quiet_ && (tty_ || printed_done_ != done_)) print(true);
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  }

  void print(bool final_line) {
    printed_done_ = done_;
    const double e = elapsed();
    const double r = rate();
    const double eta = r > 0 && total_ > done_ ? static_cast<double>(total_ - done_) / r : 0.0;
    const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    if (tty_) {
      constexpr int width = 24;
      const int filled = static_cast<int>(frac * width + 0.5);
      std::string bar(static_cast<std::size_t>(filled < 0 ? 0 : (filled > width ? width : filled)), '#');
      bar.resize(width, '.');
      std::fprintf(stderr, "\r%s [%s] %lld/%lld %5.1f%% %.3g %s/s %s ETA %s %s\x1b[K", label_.c_str(),
                   bar.c_str(), static_cast<long long>(done_), static_cast<long long>(total_), 100 * frac, r,
                   unit_.c_str(), format_duration(e).c_str(), format_duration(eta).c_str(), status_.c_str());
      if (final_line) std::fputc('\n', stderr);
    } else {
      std::fprintf(stderr, "[%s] %lld/%lld (%.1f%%) %.3g %s/s elapsed %s ETA %s %s\n", label_.c_str(),
                   static_cast<long long>(done_), static_cast<long long>(total_), 100 * frac, r, unit_.c_str(),
                   format_duration(e).c_str(), format_duration(eta).c_str(), status_.c_str());
    }
    std::fflush(stderr);
  }

  std::string label_, unit_, status_;
  index_t total_ = 0, done_ = 0, printed_done_ = -1;
  bool quiet_ = false, tty_ = false, finished_ = false;
  double log_interval_ = 10.0;
  Clock::time_point start_, last_print_;
};

}  // namespace lowbit
