"""`python -m serving`: the container's entry command (the same as `lorechat serve`)."""

from serving.server import main

if __name__ == "__main__":
    main()
