# pybridge::fortran and pybridge::fortran_static: `use pybridge` for Fortran simulators.
#
# A compiled Fortran module (.mod) is private to the compiler and version that wrote it, so pybridge
# ships the module's source (pybridge.f90) and each consumer compiles it with its own compiler, once
# per build tree. Used by pybridge's own CMakeLists (vendored or top-level) and by the installed
# package's config; does nothing until Fortran is enabled, or when the targets exist already.

function(pybridge_add_fortran_targets source)
  if(NOT CMAKE_Fortran_COMPILER_LOADED OR TARGET pybridge::fortran)
    return()
  endif()
  foreach(_variant IN ITEMS "" "_static")
    set(_target pybridge_fortran${_variant})
    # A module directory per target: two compilations of one module must not share a .mod file.
    set(_modules ${CMAKE_BINARY_DIR}/pybridge_fortran_modules${_variant})
    add_library(${_target} STATIC ${source})
    set_target_properties(${_target} PROPERTIES
      Fortran_MODULE_DIRECTORY ${_modules}
      POSITION_INDEPENDENT_CODE ON)
    target_include_directories(${_target} INTERFACE ${_modules})
    target_link_libraries(${_target} PUBLIC pybridge::shim${_variant})
    add_library(pybridge::fortran${_variant} ALIAS ${_target})
  endforeach()
endfunction()
