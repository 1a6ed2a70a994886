// The subcommand registry of the `lowbit` tool. Each cmd_*.cpp registers itself with a static
// `Registration`, so adding a subcommand never edits a shared file. A setup function declares its
// options on the CLI11 subcommand and returns the action to run once parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace lowbit::cli {

using Action = std::function<int()>;
using Setup = std::function<Action(CLI::App&)>;

struct CommandSpec {
  std::string name;
  std::string description;
  Setup setup;
};

inline std::vector<CommandSpec>& registry() {
  static std::vector<CommandSpec> commands;
  return commands;
}

struct Registration {
  Registration(std::string name, std::string description, Setup setup) {
    registry().push_back({std::move(name), std::move(description), std::move(setup)});
  }
};

}  // namespace lowbit::cli
