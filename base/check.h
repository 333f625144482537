// CHECK for invariants that cannot be violated by input (clients, files, config, peers).
// A failed CHECK is a bug in Peng: it prints where and aborts.
#pragma once

#include <cstdio>
#include <cstdlib>

#define PENG_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)
