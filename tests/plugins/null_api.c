/* The entry returns NULL: must be rejected. */
#include "testplug.h"

T_ENTRY(NULL)
