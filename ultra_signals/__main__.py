from ultra_signals.apps.cli import main

main()
