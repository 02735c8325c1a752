from compound.cli import main

main()
