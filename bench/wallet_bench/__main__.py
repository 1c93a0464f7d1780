from wallet_bench.cli import main

main()
