from uprise.main import main

main()
