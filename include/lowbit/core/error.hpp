// lowbit::Error: the one exception type host code throws on bad input. Messages name the file, the
// tensor or key, what was expected and what was found, so a user can act on them. Device code never
// throws; `LOWBIT_CHECK` is for user-facing validation, never replaced by assert().
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace lowbit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
}  // namespace detail

// Throws lowbit::Error built from the streamed arguments: fail("file ", path, ": expected ", n).
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace lowbit

// Validates user input; the message arguments are only evaluated on failure.
#define LOWBIT_CHECK(condition, ...)            \
  do {                                          \
    if (!(condition)) ::lowbit::fail(__VA_ARGS__); \
  } while (0)
