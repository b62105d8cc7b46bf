from fastsentiment.cli import main

main()
