"""WeChat Official Account gateway (issue 9): callbacks at ``/wechat[/{name}]`` → the chat engine;
answers as passive replies within WeChat's 5 seconds, later ones through the customer-service API."""

from callcenter.chat.wechat.gateway import DeliveryRefused, Reply, WechatGateway
from callcenter.chat.wechat.router import create_wechat_router

__all__ = ["DeliveryRefused", "Reply", "WechatGateway", "create_wechat_router"]
