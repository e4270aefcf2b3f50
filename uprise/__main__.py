from uprise.main import run

run()
