"""python -m suture"""

from .cli import main

main()
