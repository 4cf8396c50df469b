"""The operator's web view over the receiver's store (pip install 'cimedge[web]')."""
