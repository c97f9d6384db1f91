from gridtwin.cli import main

raise SystemExit(main())
