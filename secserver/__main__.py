from secserver.cli.main import main

main()
