#!/bin/sh
# The unit tests of the example: they pass, unless the pipeline variable
# BREAK_UNIT is "yes".
if [ "${BREAK_UNIT:-}" = yes ]; then
    echo "unit: 1 of 3 tests failed" >&2
    exit 7
fi
echo "unit: 3 of 3 tests passed"
