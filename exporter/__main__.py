from exporter.cli.commands import main

raise SystemExit(main())
