from ossiclass.cli import main

raise SystemExit(main())
