from idr.cli import main

main()
