./demo.sh     # run the demo bus on this machine
./test.sh     # run every check: ruff, import layers, mypy, the docs build, the whole test suite
