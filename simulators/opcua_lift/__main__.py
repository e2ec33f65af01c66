from simulators.opcua_lift.cli import run

run()
