// The run directory of a resumable calibration: a fingerprint of everything that determines the result
// (refused when a different run wants to reuse the folder, with the differing keys listed), one
// checkpoint per finished block (io/quantized_model.hpp's block checkpoints), and the activations that
// feed the next block, each written atomically (core/atomic_file.hpp) and checksummed, so a killed run
// resumes exactly where it stopped and ends byte-identical to an uninterrupted one.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../core/atomic_file.hpp"
#include "../core/error.hpp"
#include "../core/hash.hpp"
#include "../core/tensor.hpp"

namespace lowbit::calib {

class CheckpointDir {
 public:
  CheckpointDir() = default;
  explicit CheckpointDir(std::string dir) : dir_(std::move(dir)) {}
  bool enabled() const { return !dir_.empty(); }
  std::string block_path(int layer) const {
    char name[64];
    std::snprintf(name, sizeof name, "block_%03d.safetensors", layer);
    return (std::filesystem::path(dir_) / name).string();
  }
  // The quantized model's block inputs, and (when a method keeps it) the FP model's own stream.
  std::string state_path(const std::string& name = "activations") const {
    return (std::filesystem::path(dir_) / (name + ".bin")).string();
  }
  std::string fingerprint_path() const { return (std::filesystem::path(dir_) / "fingerprint.json").string(); }

  // Creates the directory and records the fingerprint, or checks it against an existing run.
  void open(const nlohmann::json& fingerprint) {
    std::filesystem::create_directories(dir_);
    const auto path = fingerprint_path();
    if (std::filesystem::exists(path)) {
      std::ifstream in(path);
      nlohmann::json existing;
      try {
        existing = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        fail("run directory ", dir_, ": ", path, " is not valid JSON (", e.what(), ")");
      }
      if (existing != fingerprint) {
        std::string diffs;
        for (auto& [key, value] : fingerprint.items())
          if (!existing.contains(key) || existing[key] != value)
            diffs += "\n  " + key + ": run has " + (existing.contains(key) ? existing[key].dump() : "nothing") +
                     ", this invocation has " + value.dump();
        fail("run directory ", dir_, " belongs to a different calibration run; refusing to resume.", diffs,
             "\nUse a fresh --run-dir (or delete this one) to start over.");
      }
      return;
    }
    write_file_atomically(path, fingerprint.dump(2) + "\n");
  }

  // The activations after block `layer` (inputs of layer + 1), [tokens, dim] float32.
  void save_state(int next_layer, const std::vector<float>& x, index_t tokens, index_t dim,
                  const std::string& name = "activations") const {
    std::string bytes;
    const std::uint64_t header[4] = {0x54434b504c42574cULL /* "LWBLPKCT" */, static_cast<std::uint64_t>(next_layer),
                                     static_cast<std::uint64_t>(tokens), static_cast<std::uint64_t>(dim)};
    bytes.append(reinterpret_cast<const char*>(header), sizeof header);
    bytes.append(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
    const std::uint64_t check = fnv1a64(bytes.data(), bytes.size());
    bytes.append(reinterpret_cast<const char*>(&check), sizeof check);
    write_file_atomically(state_path(name), bytes);
  }

  // Returns the next layer to calibrate (0 when there is nothing to resume) and fills x.
  int load_state(std::vector<float>& x, index_t tokens, index_t dim, const std::string& name = "activations") const {
    const auto path = state_path(name);
    if (!std::filesystem::exists(path)) return 0;
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::size_t expected = 32 + static_cast<std::size_t>(tokens * dim) * sizeof(float) + 8;
    LOWBIT_CHECK(bytes.size() == expected, path, ": checkpoint has ", bytes.size(), " bytes, expected ", expected,
                 " (truncated or from another configuration)");
    std::uint64_t header[4], check;
    std::memcpy(header, bytes.data(), sizeof header);
    std::memcpy(&check, bytes.data() + bytes.size() - 8, 8);
    LOWBIT_CHECK(header[0] == 0x54434b504c42574cULL, path, ": not a lowbit activation checkpoint");
    LOWBIT_CHECK(fnv1a64(bytes.data(), bytes.size() - 8) == check, path, ": checksum mismatch (corrupted checkpoint)");
    LOWBIT_CHECK(header[2] == static_cast<std::uint64_t>(tokens) && header[3] == static_cast<std::uint64_t>(dim), path,
                 ": activations are ", header[2], "x", header[3], ", expected ", tokens, "x", dim);
    x.resize(static_cast<std::size_t>(tokens * dim));
    std::memcpy(x.data(), bytes.data() + 32, x.size() * sizeof(float));
    return static_cast<int>(header[1]);
  }

 private:
  std::string dir_;
};

}  // namespace lowbit::calib
