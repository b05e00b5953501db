from frontends.pydsl import *
import sys
sys.exit(2)
