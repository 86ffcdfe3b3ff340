"""Token endpoints: login, refresh, logout (blacklists the refresh token) and who-am-I.

Failed logins are counted per client address and username (``rayanpbx.login_throttle``);
past ``LOGIN_FAILURE_LIMIT`` within ``LOGIN_FAILURE_WINDOW`` seconds the login answers 429.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed, Throttled, ValidationError
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenRefreshView

from rayanpbx import login_throttle
from rayanpbx.api.schema import error_response


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    email = serializers.EmailField(allow_blank=True)


def user_data(user: AbstractBaseUser) -> dict[str, Any]:
    return UserSerializer(user).data


class LoginSerializer(TokenObtainPairSerializer):
    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        data = super().validate(attrs)
        data["user"] = user_data(self.user)
        return data


class LoginView(APIView):
    """Exchange a username and password for an access and a refresh token."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'  # so a failed login is 401, not 403

    @extend_schema(
        request=inline_serializer("Login", {"username": serializers.CharField(), "password": serializers.CharField()}),
        responses={
            200: inline_serializer(
                "LoginResult",
                {"access": serializers.CharField(), "refresh": serializers.CharField(), "user": UserSerializer()},
            ),
            429: error_response("Too many failed logins from this address for this username; try again later."),
        },
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
        username = str(request.data.get("username", ""))
        if login_throttle.locked_out(request, username):
            raise Throttled(wait=settings.LOGIN_FAILURE_WINDOW, detail="Too many failed logins; try again later.")
        serializer = LoginSerializer(data=request.data, context={"request": request})
        try:
            serializer.is_valid(raise_exception=True)
        except AuthenticationFailed:
            login_throttle.failed(request, username)
            raise
        login_throttle.succeeded(request, username)
        return Response(serializer.validated_data)


class RefreshView(TokenRefreshView):
    """Exchange a refresh token for a new access token (and a rotated refresh token)."""

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except ObjectDoesNotExist:
            raise AuthenticationFailed("The account of this token no longer exists.") from None


class LogoutView(APIView):
    """Blacklist a refresh token so it can no longer be used."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=inline_serializer("Logout", {"refresh": serializers.CharField()}),
        responses={205: None},
    )
    def post(self, request: Request) -> Response:
        raw = request.data.get("refresh") if isinstance(request.data, dict) else None
        if not isinstance(raw, str) or not raw:
            raise ValidationError({"refresh": ["This field is required."]})
        try:
            token = RefreshToken(raw)
            if str(token.get("user_id")) != str(request.user.pk):
                raise ValidationError({"refresh": ["This refresh token belongs to another user."]})
            token.blacklist()
        except TokenError as exc:
            raise ValidationError({"refresh": [str(exc)]}) from None
        return Response(status=status.HTTP_205_RESET_CONTENT)


class CurrentUserView(APIView):
    """The signed-in user."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=UserSerializer)
    def get(self, request: Request) -> Response:
        return Response(user_data(request.user))
