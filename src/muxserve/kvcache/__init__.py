"""muxserve.kvcache"""
