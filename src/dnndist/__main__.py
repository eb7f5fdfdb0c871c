from dnndist.cli import main

raise SystemExit(main())
