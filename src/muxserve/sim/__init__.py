"""muxserve.sim"""
