from visearch.cli.main import main

raise SystemExit(main())
