// Runs one test case of this test executable in a child process with an extra environment variable and
// returns its wait status: the SIGKILL-and-resume tests kill such a child mid-run (the child test case
// raises SIGKILL from a pipeline hook when it sees the variable) and then resume its run directory.
#pragma once

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

extern char** environ;

namespace lowbit::test {

// -1 when the child could not be started.
inline int run_test_case_in_child(const std::string& test_case, const std::string& env_assignment) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  env_strings.push_back(env_assignment);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  std::string filter = "--test-case=" + test_case;
  char* argv[] = {exe.data(), filter.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data()) != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return status;
}

}  // namespace lowbit::test
