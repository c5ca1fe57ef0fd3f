from relaxkd.cli import main

main()
