// Fuzz target `run_dir`: the other files of a resumable calibration run directory (calib/run_dir.hpp),
// given as  <fingerprint.json> \n=====\n <activations.bin>.
// Covers CheckpointDir::open (an existing fingerprint.json parsed and compared with this run's, the
// differing keys listed) and CheckpointDir::load_state (size, magic, FNV-1a checksum, shape). The
// harness rewrites the checksum (the last 8 bytes of activations.bin) to match, so the checks behind it
// are reached; a mismatching checksum is the unit tests' business.
#include <lowbit/calib/run_dir.hpp>
#include <lowbit/core/hash.hpp>

#include "fuzz_common.hpp"

using namespace lowbit;

LOWBIT_FUZZ_TARGET(run_dir) {
  const auto parts = lowbit_fuzz::split_parts(data, size, 2);
  const auto dir = lowbit_fuzz::scratch_dir() / "run";
  std::filesystem::create_directories(dir);
  calib::CheckpointDir ckpt(dir.string());

  lowbit_fuzz::write_file("run/fingerprint.json", parts[0]);
  const nlohmann::json fingerprint = {{"config", {{"nsamples", 4}, {"seqlen", 64}}},
                                      {"plan", "uniform:4:32"},
                                      {"tokens", "0123456789abcdef:256"}};
  lowbit_fuzz::expect_error_only([&] { ckpt.open(fingerprint); });

  std::string state = parts[1];
  if (state.size() >= 8) {
    const std::uint64_t sum = fnv1a64(state.data(), state.size() - 8);
    std::memcpy(state.data() + state.size() - 8, &sum, 8);
  }
  lowbit_fuzz::write_file("run/activations.bin", state);
  std::vector<float> x;
  lowbit_fuzz::expect_error_only([&] { (void)ckpt.load_state(x, 4, 2); });
  return 0;
}
