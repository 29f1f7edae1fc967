/* Included by api.h: a discovered input, not a declared one. */
#define DETAIL_OFFSET 2
