from visearch.cli import main

raise SystemExit(main())
