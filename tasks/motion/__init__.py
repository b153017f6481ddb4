"""Motion: TV-L1 optical flow, the uint8 flow contract and motion differential sampling."""
