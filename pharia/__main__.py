from pharia.cli import main

main()
