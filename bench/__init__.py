"""Benchmarks: `python -m bench NAME` prints a table and writes bench/out/NAME.json.

Each benchmark is a module `bench/<name>.py` with `run() -> list[Row]`. Every
figure carries the reference measured in the same run (`baseline`) and
`ratio = value / baseline`, because these machines are noisy and only ratios
measured together compare. Benchmarks never assert on time.
"""
