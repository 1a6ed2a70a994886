# Layering check (CTest `layering.format`): headers under include/lowbit/format/ hold storage and shared
# arithmetic only, so they must not include calib/, kernels/, nn/ or io/ (the façades in quantizer/ and
# the registry formats.hpp sit above them). Fails naming every offending include.
# Usage: cmake -DLOWBIT_SOURCE_DIR=<repo> -P tests/check_layering.cmake
file(GLOB headers "${LOWBIT_SOURCE_DIR}/include/lowbit/format/*.hpp")
list(LENGTH headers count)
if(count EQUAL 0)
  message(FATAL_ERROR "layering: no headers found under ${LOWBIT_SOURCE_DIR}/include/lowbit/format")
endif()
set(violations "")
foreach(h IN LISTS headers)
  file(STRINGS "${h}" lines REGEX "^[ \t]*#[ \t]*include")
  foreach(line IN LISTS lines)
    if(line MATCHES "(calib|kernels|nn|io)/" OR line MATCHES "quantizer|formats\\.hpp")
      get_filename_component(name "${h}" NAME)
      string(APPEND violations "\n  format/${name}: ${line}")
    endif()
  endforeach()
endforeach()
if(violations)
  message(FATAL_ERROR "layering: headers under format/ include layers above them:${violations}")
endif()
message(STATUS "layering: ${count} headers under format/ include none of calib/, kernels/, nn/, io/, quantizer, formats.hpp")
