#pragma once
/// @file
/// @brief Test support: the message of a `Result` that must be an error.

#include <gtest/gtest.h>

#include <string>

#include "vmm/error.hpp"

namespace vmm::testing {

/// @brief The error message of `result`, for `EXPECT_THAT(error_of(r), HasSubstr("..."))`. A result holding a value
/// fails the test and yields "<no error>", which no expected substring matches.
template <typename T>
[[nodiscard]] std::string error_of(const Result<T>& result) {
  if (result) {
    ADD_FAILURE() << "expected an error, got a value";
    return "<no error>";
  }
  return result.error().message();
}

}  // namespace vmm::testing
