"""``python -m radam_repro.data fetch NAME... [--root DIR] [--mirror URL] [--force]`` (:mod:`radam_repro.data.fetch`)."""

from radam_repro.data.fetch import main

if __name__ == "__main__":
    main()
