"""Prints a coverage table in the shape coverage.py prints it."""
rows = [("app/__init__.py", 4, 0), ("tests/run_tests.py", 48, 9)]
print(f"{'Name':<22}{'Stmts':>6}{'Miss':>6}{'Cover':>7}")
for name, stmts, miss in rows:
    print(f"{name:<22}{stmts:>6}{miss:>6}{(stmts - miss) * 100 // stmts:>6}%")
total = sum(r[1] for r in rows)
missed = sum(r[2] for r in rows)
print(f"{'TOTAL':<22}{total:>6}{missed:>6}{(total - missed) * 100 // total:>6}%")
