// The one way lowbit writes a file that must never be seen half-written (model files, checkpoints,
// reports): bytes go to a temporary file in the destination's folder, which is fsynced, renamed over
// the destination, and then the folder itself is fsynced so the rename survives a crash. A writer that
// is destroyed without commit() (an exception, a failed write) removes its temporary file, so a
// failure never leaves debris or a truncated destination. The folder must exist (a typo in an output
// path is an error, not a new folder); callers that own a folder create it first. A writer killed
// outright (SIGKILL, power loss) cannot clean up: the next writer of the same destination removes the
// temporary files of writers that are no longer running.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "error.hpp"

namespace lowbit {

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path) : path_(std::move(path)) {
    folder_ = path_.has_parent_path() ? path_.parent_path() : std::filesystem::path(".");
    std::string name = ".";  // appended piecewise: GCC 12 warns (-Wrestrict) on "." + std::string&&
    name.append(path_.filename().string()).append(".tmp.").append(std::to_string(::getpid()));
    temp_ = folder_ / name;
    remove_stale_temporaries(name.substr(0, name.size() - std::to_string(::getpid()).size()));
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    LOWBIT_CHECK(fd_ >= 0, "cannot create '", temp_.string(), "': ", std::strerror(errno));
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) {
      std::error_code ignored;
      std::filesystem::remove(temp_, ignored);
    }
  }

  void write(const void* data, std::size_t bytes) {
    const auto* p = static_cast<const char*>(data);
    std::size_t done = 0;
    while (done < bytes) {
      const ssize_t n = ::write(fd_, p + done, bytes - done);
      if (n < 0 && errno == EINTR) continue;
      LOWBIT_CHECK(n > 0, "write to '", temp_.string(), "' failed after ", written_ + done, " bytes: ",
                   n < 0 ? std::strerror(errno) : "no progress (disk full?)");
      done += static_cast<std::size_t>(n);
    }
    written_ += bytes;
  }
  void write(const std::string& bytes) { write(bytes.data(), bytes.size()); }

  // Makes the destination hold exactly what was written: fsync, rename over it, fsync of the folder.
  void commit() {
    LOWBIT_CHECK(::fsync(fd_) == 0, "fsync of '", temp_.string(), "' failed: ", std::strerror(errno));
    const int closed = ::close(fd_);
    fd_ = -1;
    LOWBIT_CHECK(closed == 0, "close of '", temp_.string(), "' failed: ", std::strerror(errno));
    if (::rename(temp_.c_str(), path_.c_str()) != 0)
      fail("cannot rename '", temp_.string(), "' to '", path_.string(), "': ", std::strerror(errno));
    committed_ = true;
    const int dir = ::open(folder_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      (void)::fsync(dir);  // best effort: makes the rename itself durable
      ::close(dir);
    }
  }

 private:
  // Removes `<prefix><pid>` files in the folder whose writer process no longer exists.
  void remove_stale_temporaries(const std::string& prefix) const {
    std::error_code ec;
    for (std::filesystem::directory_iterator it(folder_, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string digits = name.substr(prefix.size());
      if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
      const pid_t pid = static_cast<pid_t>(std::stol(digits));
      if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge
      std::error_code ignored;
      std::filesystem::remove(it->path(), ignored);
    }
  }

  std::filesystem::path path_, folder_, temp_;
  int fd_ = -1;
  std::size_t written_ = 0;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically (see AtomicFileWriter).
inline void write_file_atomically(const std::filesystem::path& path, const std::string& bytes) {
  AtomicFileWriter out(path);
  out.write(bytes);
  out.commit();
}

}  // namespace lowbit
