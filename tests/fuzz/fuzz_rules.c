/*
 * fuzz_rules.c - libFuzzer target: any bytes as a rules file. The compiler must answer
 * with a rule set or with errors, never crash, hang or leak; a compiled set must dump.
 */
#include "rules/rules.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    onr_buf errors = {0};
    rule_set *rs = NULL;
    if (rule_compile("fuzz.rules", (const char *)data, size, &rs, &errors) == 0) {
        onr_buf dump = {0};
        rule_dump(rs, &dump);
        onr_buf_free(&dump);
        rule_free(rs);
    }
    onr_buf_free(&errors);
    return 0;
}
