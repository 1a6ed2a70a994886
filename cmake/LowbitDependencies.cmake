# Finds lowbit's dependencies with find_package first; when a package is missing and the machine has
# internet, FetchContent brings it in (LOWBIT_FETCH_MISSING, ON by default). Shared by the build tree
# and by the installed lowbitConfig.cmake, so consumers resolve the same dependencies.
include_guard(GLOBAL)
include(FetchContent)
option(LOWBIT_FETCH_MISSING "Fetch missing dependencies with FetchContent" ON)

macro(_lowbit_fetch name repo tag)
  if(LOWBIT_FETCH_MISSING AND NOT LOWBIT_CONSUMER_MODE)
    message(STATUS "lowbit: ${name} not found, fetching ${repo} @ ${tag}")
    FetchContent_Declare(${name} GIT_REPOSITORY ${repo} GIT_TAG ${tag} GIT_SHALLOW TRUE)
    FetchContent_MakeAvailable(${name})
  endif()
endmacro()

# Eigen (required): dense linear algebra, GEMMs, Cholesky.
find_package(Eigen3 3.4 QUIET NO_MODULE)
if(NOT TARGET Eigen3::Eigen)
  set(EIGEN_BUILD_TESTING OFF CACHE BOOL "" FORCE)
  set(EIGEN_BUILD_DOC OFF CACHE BOOL "" FORCE)
  _lowbit_fetch(eigen https://gitlab.com/libeigen/eigen.git 3.4.0)
  if(NOT TARGET Eigen3::Eigen AND TARGET eigen)
    add_library(Eigen3::Eigen ALIAS eigen)
  endif()
endif()

# nlohmann/json (required): safetensors headers, config.json, tokenizer.json, jsonl, reports.
find_package(nlohmann_json 3.10 QUIET)
if(NOT TARGET nlohmann_json::nlohmann_json)
  _lowbit_fetch(nlohmann_json https://github.com/nlohmann/json.git v3.11.3)
endif()

# OpenMP (optional): parallel_for and Eigen's threads.
find_package(OpenMP QUIET COMPONENTS CXX)

# PCRE2 (optional): the byte-level BPE pre-tokenizer regex (Unicode properties).
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND AND NOT TARGET PkgConfig::LOWBIT_PCRE2)
  pkg_check_modules(LOWBIT_PCRE2 QUIET IMPORTED_TARGET GLOBAL libpcre2-8)
endif()

# bzip2 (optional): reading HellaSwag's .bz2 task file.
find_package(BZip2 QUIET)

# SentencePiece (optional): .model tokenizers.
if(PkgConfig_FOUND AND NOT TARGET PkgConfig::LOWBIT_SENTENCEPIECE)
  pkg_check_modules(LOWBIT_SENTENCEPIECE QUIET IMPORTED_TARGET GLOBAL sentencepiece)
endif()

function(lowbit_link_dependencies target)
  target_link_libraries(${target} INTERFACE Eigen3::Eigen nlohmann_json::nlohmann_json)
  if(TARGET OpenMP::OpenMP_CXX)
    target_link_libraries(${target} INTERFACE OpenMP::OpenMP_CXX)
  endif()
  if(TARGET PkgConfig::LOWBIT_PCRE2)
    target_link_libraries(${target} INTERFACE PkgConfig::LOWBIT_PCRE2)
    target_compile_definitions(${target} INTERFACE LOWBIT_WITH_PCRE2=1)
  endif()
  if(TARGET BZip2::BZip2)
    target_link_libraries(${target} INTERFACE BZip2::BZip2)
    target_compile_definitions(${target} INTERFACE LOWBIT_WITH_BZIP2=1)
  endif()
  if(TARGET PkgConfig::LOWBIT_SENTENCEPIECE)
    target_link_libraries(${target} INTERFACE PkgConfig::LOWBIT_SENTENCEPIECE)
    target_compile_definitions(${target} INTERFACE LOWBIT_WITH_SENTENCEPIECE=1)
  endif()
endfunction()

# Dependencies of lowbit's own tests, tools and benchmarks.
macro(lowbit_find_dev_dependencies)
  find_package(doctest QUIET)
  if(NOT TARGET doctest::doctest)
    _lowbit_fetch(doctest https://github.com/doctest/doctest.git v2.4.11)
  endif()
  find_package(CLI11 QUIET)
  if(NOT TARGET CLI11::CLI11)
    _lowbit_fetch(cli11 https://github.com/CLIUtils/CLI11.git v2.3.2)
  endif()
endmacro()

macro(lowbit_find_bench_dependencies)
  find_package(benchmark QUIET)
  if(NOT TARGET benchmark::benchmark)
    set(BENCHMARK_ENABLE_TESTING OFF CACHE BOOL "" FORCE)
    _lowbit_fetch(benchmark https://github.com/google/benchmark.git v1.8.3)
  endif()
endmacro()
