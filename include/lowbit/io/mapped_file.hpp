// Read-only memory maps and a bounds-checked cursor over their bytes. Model files are hundreds of MB,
// so loaders map them instead of copying; every parse step goes through ByteReader, which refuses to
// read past the end of the buffer and throws lowbit::Error naming the file, the offset and the field,
// so a truncated or corrupted file can never make a loader read out of bounds.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "../core/error.hpp"

namespace lowbit::io {

static_assert(std::endian::native == std::endian::little,
              "lowbit's file readers assume a little-endian host");

// a + b and a * b for sizes read from untrusted headers; throws instead of wrapping around.
inline std::uint64_t checked_add(std::uint64_t a, std::uint64_t b, const std::string& what) {
  LOWBIT_CHECK(a <= std::numeric_limits<std::uint64_t>::max() - b, what, ": size overflow (", a, " + ", b, ")");
  return a + b;
}
inline std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const std::string& what) {
  LOWBIT_CHECK(b == 0 || a <= std::numeric_limits<std::uint64_t>::max() / b, what, ": size overflow (", a,
               " * ", b, ")");
  return a * b;
}

// A whole file mapped read-only (PROT_READ, MAP_PRIVATE). Move-only; unmaps on destruction. An empty
// file is valid and has size() == 0 and data() == nullptr.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::filesystem::path& path) : path_(path.string()) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    LOWBIT_CHECK(fd >= 0, "cannot open '", path_, "': ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      fail("cannot stat '", path_, "': ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail("'", path_, "' is not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        fail("cannot map '", path_, "' (", size_, " bytes): ", std::strerror(err));
      }
      data_ = static_cast<const std::uint8_t*>(p);
    }
    ::close(fd);  // the mapping stays valid after closing the descriptor
  }
  ~MappedFile() { release(); }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { *this = std::move(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      path_ = std::move(other.path_);
    }
    return *this;
  }

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release() {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::string path_;
};

// A little-endian cursor over [data, data + size). Every read names what it reads (`what`), which ends
// up in the error message together with `source` (usually the file path) and the offset.
class ByteReader {
 public:
  ByteReader(const std::uint8_t* data, std::size_t size, std::string source)
      : data_(data), size_(size), source_(std::move(source)) {}
  explicit ByteReader(const MappedFile& file) : ByteReader(file.data(), file.size(), file.path()) {}

  std::size_t offset() const { return pos_; }
  std::size_t size() const { return size_; }
  std::size_t remaining() const { return size_ - pos_; }
  const std::string& source() const { return source_; }
  const std::uint8_t* data() const { return data_; }

  // Throws unless `n` more bytes are available at the cursor.
  void require(std::uint64_t n, std::string_view what) const {
    if (n > remaining())
      fail(source_, ": truncated at offset ", pos_, " while reading ", what, " (need ", n, " bytes, ",
           remaining(), " left of ", size_, ")");
  }

  void seek(std::uint64_t offset, std::string_view what) {
    if (offset > size_)
      fail(source_, ": offset ", offset, " of ", what, " is past the end of the file (", size_, " bytes)");
    pos_ = static_cast<std::size_t>(offset);
  }
  void skip(std::uint64_t n, std::string_view what) {
    require(n, what);
    pos_ += static_cast<std::size_t>(n);
  }

  // Returns a pointer to the next `n` bytes and advances past them.
  const std::uint8_t* take(std::uint64_t n, std::string_view what) {
    require(n, what);
    const std::uint8_t* p = data_ + pos_;
    pos_ += static_cast<std::size_t>(n);
    return p;
  }

  // Reads one trivially copyable little-endian value (the host is little-endian: x86-64, aarch64).
  template <class T>
  T read(std::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>, "ByteReader::read needs a trivially copyable type");
    T value;
    std::memcpy(&value, take(sizeof(T), what), sizeof(T));
    return value;
  }

  std::string read_string(std::uint64_t n, std::string_view what) {
    const auto* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
  }

 private:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t pos_ = 0;
  std::string source_;
};

}  // namespace lowbit::io
