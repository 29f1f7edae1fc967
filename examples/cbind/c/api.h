#include "detail.h"

#define ANSWER_BASE 40

int memo_answer(void);
