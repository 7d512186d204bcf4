from cropflow.cli import main

raise SystemExit(main())
