from ffnode.cli import main

main()
