// Learning-rate schedules: linear warm-up from 0 to the peak over `warmup_steps`, then constant, linear
// decay or cosine decay to `min_ratio · peak` at `total_steps`. Pure functions of the step number, so a
// resumed run gets exactly the learning rate it would have had.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "../core/error.hpp"

namespace lowbit::train {

enum class ScheduleKind { Constant, Linear, Cosine };

inline ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "constant") return ScheduleKind::Constant;
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "cosine") return ScheduleKind::Cosine;
  fail("unknown learning-rate schedule '", name, "' (expected constant, linear or cosine)");
}

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::Cosine;
  float peak_lr = 1e-3f;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  float min_ratio = 0.1f;  // final lr = min_ratio * peak_lr (linear and cosine)

  // Learning rate for the update with 0-based index `step`.
  float lr(std::int64_t step) const {
    if (step < warmup_steps) return peak_lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
    if (kind == ScheduleKind::Constant) return peak_lr;
    const std::int64_t decay_steps = std::max<std::int64_t>(1, total_steps - warmup_steps);
    const double progress = std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
    const double min_lr = static_cast<double>(min_ratio) * peak_lr;
    double lr = peak_lr;
    if (kind == ScheduleKind::Linear) lr = peak_lr + (min_lr - peak_lr) * progress;
    if (kind == ScheduleKind::Cosine) lr = min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + std::cos(3.141592653589793 * progress));
    return static_cast<float>(lr);
  }
};

}  // namespace lowbit::train
