./demo.sh     # run the demo bus on this machine
./test.sh     # run every check: ruff, and the whole test suite
