"""`python -m provisioners.steps.docker render` rewrites deploy/docker/rendered/."""
from provisioners.steps.docker.cli import main

raise SystemExit(main())
