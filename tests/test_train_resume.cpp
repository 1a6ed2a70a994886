// The pretraining kill test: a child process trains with frequent checkpoints and is killed with SIGKILL
// mid-run; a second child resumes from what it left; the final checkpoint must be byte-identical (same
// weights, AdamW state, RNG state, step) to that of an uninterrupted run with the same seed. All training
// runs in forked children of a process that has not started OpenMP threads, so fork is safe.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <lowbit/train/pretrain.hpp>

using namespace lowbit;
using namespace lowbit::train;

namespace {

constexpr std::int64_t kSteps = 120;

// Runs in a child: trains (or resumes) the tiny model and exits 0 on success.
[[noreturn]] void child_train(const std::filesystem::path& checkpoint, std::int64_t every) {
  int code = 0;
  try {
    const nn::ModelConfig c = byte_model_config(32, 64, 2, 2, 1, 32);
    const auto data = synthetic_token_data(11, 1u << 16, 1u << 12);
    PretrainOptions o;
    o.batch_size = 8;
    o.seq_len = 32;
    o.steps = kSteps;
    o.schedule = LrSchedule{ScheduleKind::Cosine, 1e-2f, 10, kSteps, 0.1f};
    o.eval_every = 0;
    o.eval_tokens = 1024;
    o.quiet = true;
    o.seed = 11;
    o.checkpoint = checkpoint;
    o.checkpoint_every = every;
    o.resume = true;
    set_num_threads(1);  // tiny matrices; and robust on a loaded machine
    auto model = initial_model(c, o.seed);
    pretrain(model, data, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: %s\n", e.what());
    code = 3;
  }
  std::_Exit(code);
}

int run_child(const std::filesystem::path& checkpoint, std::int64_t every) {
  const pid_t pid = fork();
  if (pid == 0) child_train(checkpoint, every);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("SIGKILL during pretraining, then --resume: final weights are bit-identical") {
  const auto dir = std::filesystem::temp_directory_path() / ("lowbit_test_resume_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto straight = dir / "straight.bin", killed = dir / "killed.bin";

  REQUIRE(run_child(straight, 1000) == 0);

  // The victim checkpoints every 3 steps; it is killed once a checkpoint at step >= 30 exists, i.e. at
  // a random point between checkpoints (possibly while it writes one) well before the end.
  const pid_t victim = fork();
  if (victim == 0) child_train(killed, 3);
  bool killed_mid_run = false;
  for (int i = 0; i < 100000 && !killed_mid_run; ++i) {
    if (std::filesystem::exists(killed) && read_checkpoint(killed).state.step >= 30) {
      kill(victim, SIGKILL);
      killed_mid_run = true;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  int status = 0;
  waitpid(victim, &status, 0);
  REQUIRE(killed_mid_run);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  const auto at_kill = read_checkpoint(killed).state.step;
  MESSAGE("killed with a checkpoint at step ", at_kill, " of ", kSteps);
  CHECK(at_kill > 0);
  CHECK(at_kill < kSteps);

  REQUIRE(run_child(killed, 3) == 0);
  const auto a = file_bytes(straight), b = file_bytes(killed);
  CHECK(a.size() == b.size());
  CHECK(a == b);
  CHECK(read_checkpoint(killed).state.step == kSteps);
  std::filesystem::remove_all(dir);
}
